"""Sync sessions between a desktop and a device: the live session over a `Link` (`session`), the
store-and-forward exchange through a `Mailbox` (`mailbox`), and what crosses the wire (`wire`)."""
