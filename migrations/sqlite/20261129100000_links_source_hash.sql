-- What a source last sent for a link, before mapping: the hash of the raw
-- record with the mapping that read it. A record that arrives again with
-- the same hash is unchanged without being mapped. Only the take-in of that
-- very record sets it; any other write of the link clears it.
ALTER TABLE links ADD COLUMN source_hash TEXT;
