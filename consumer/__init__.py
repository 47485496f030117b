"""The erasure fan-out worker: Kafka erasure requests to marketing SaaS vendors, tracked in a ledger."""
