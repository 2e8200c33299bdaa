"""Docker network plugin (`--net=weave`): libnetwork remote network and IPAM drivers."""
