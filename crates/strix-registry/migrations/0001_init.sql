-- Schema 1 of the Strix model registry. Portable SQL: the same statements run on SQLite and
-- PostgreSQL. Times are unix seconds; manifests are JSON text.

-- One row per model name; last_version only grows, so a deleted version's number is never
-- given to different weights.
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    last_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE versions (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    task TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    strix_version TEXT NOT NULL,
    lineage TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

-- The files of a version, by content digest (their blobs live at blobs/sha256/<hex>).
CREATE TABLE artifacts (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (name, version, file)
);

CREATE INDEX artifacts_sha256 ON artifacts (sha256);

CREATE TABLE aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (name, alias)
);
