"""Victim Support Online relay: conversations, pairing, storage and the server."""
