"""The colorizing pipeline: the Colorizer, the streaming engine, jobs and the library calls."""
