"""Files and ffmpeg: probing, decoding, encoding, image folders, sources and sinks."""
