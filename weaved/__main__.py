from weaved.cli.main import main

raise SystemExit(main())
