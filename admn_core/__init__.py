"""ADMN core: models, training, evaluation and the inference engine (pure Python + PyTorch, no ROS)."""
