from weaved.cni.plugin import main

main()
