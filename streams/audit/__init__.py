"""The audit ledger's pure core: hybrid logical clock, per-tenant hash chain, Merkle trees, snapshot
decisions and the offline verifier (docs/audit-ledger.md). No Kafka, no Mongo, no faust."""
