"""Starting and exercising nodes: bring-up (the one way to start node processes), the demo, soak, node
benchmark, share lookup, install helpers."""
