"""Installation tools: ament index registration of a pip install, robot install planning."""
