"""Share groups (KIP-932): the share-partition state machine, the share group, sessions, and their trio layer."""
