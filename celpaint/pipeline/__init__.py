"""Readers, writers and the streaming colorize pipeline. IO lives here, at the edges."""
