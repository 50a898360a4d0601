"""The spool: clips on local disk until the destination has them, and the ledger that
remembers every clip after it left."""
