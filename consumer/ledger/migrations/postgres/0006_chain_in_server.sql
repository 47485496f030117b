-- Version 6: PostgreSQL positions and hashes new chain entries itself.
--
-- A transaction that recorded events locked the chain head, received it, hashed its
-- entries in the worker and sent them back: every replica's recording transactions waited
-- for that one lock while its holder waited for its own process (in the throughput
-- benchmark, a median of 11 ms from receiving the head to the commit, most of it a worker
-- thread waiting for Python's GIL). chain_append takes the head, hashes the entries in
-- order and moves the head, in the statement that inserts them, which goes to the server
-- with the COMMIT: the lock is held for the server's own work. Each entry's body (its
-- fields, length-prefixed: consumer/ledger/audit.py, entry_body) is still encoded by the
-- worker, and the hash is the one `verify` recomputes: SHA-256 of the previous hash, the
-- kind, the position, ';' and the body, as UTF-8, in hex.
CREATE FUNCTION chain_append(kind TEXT, bodies TEXT[])
    RETURNS TABLE (entry_pos BIGINT, entry_hash TEXT)
    LANGUAGE plpgsql AS $$
DECLARE
    body TEXT;
BEGIN
    SELECT pos, hash INTO entry_pos, entry_hash FROM chain_head WHERE id = 1 FOR UPDATE;
    FOREACH body IN ARRAY bodies LOOP
        entry_pos := entry_pos + 1;
        entry_hash := encode(
            sha256(convert_to(entry_hash || kind || entry_pos || ';' || body, 'UTF8')), 'hex'
        );
        RETURN NEXT;
    END LOOP;
    UPDATE chain_head SET pos = entry_pos, hash = entry_hash WHERE id = 1;
END
$$
