"""CNI: the `weaved-cni` plugin (also `weave-net`, `weave-ipam`) and its daemon part."""
