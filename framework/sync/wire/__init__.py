"""What crosses between desktop and device: live messages (`protocol`), mailbox drops (`drops`)
and the pairing-secret proofs and seals (`auth`)."""
