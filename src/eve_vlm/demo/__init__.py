"""The main job: a real encoder-free VLM trained from real parts on a CPU, offline (`eve-vlm demo`)."""
