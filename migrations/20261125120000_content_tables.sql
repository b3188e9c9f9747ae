-- The four content tables, as the SQLite application defined them, in
-- PostgreSQL types: JSON text becomes JSONB, DATETIME becomes timestamptz,
-- BLOB becomes BYTEA. Names, NOT NULLs, defaults, CHECKs, cascades and
-- indexes are kept so that existing ids and queries carry over.

CREATE TABLE learning_content (
    id               serial PRIMARY KEY,
    title            varchar(200) NOT NULL,
    content_type     varchar(50)  NOT NULL,
    language         varchar(10)  NOT NULL DEFAULT 'thai',
    native_text      text         NOT NULL,
    translation      text         NOT NULL,
    ipa              text         NOT NULL,
    difficulty_level integer,
    tags             jsonb,
    content_metadata jsonb,
    created_at       timestamptz DEFAULT now(),
    updated_at       timestamptz DEFAULT now()
);

CREATE INDEX idx_learning_content_type     ON learning_content (content_type);
CREATE INDEX idx_learning_content_language ON learning_content (language);
CREATE INDEX idx_learning_content_title    ON learning_content (title);
CREATE INDEX idx_learning_content_tags     ON learning_content USING gin (tags);
CREATE INDEX idx_learning_content_metadata ON learning_content USING gin (content_metadata);

CREATE TABLE content_fragments (
    id                  serial PRIMARY KEY,
    native_text         text        NOT NULL,
    body_text           text        NOT NULL,
    ipa                 text,
    extra               text,
    fragment_type       varchar(50) NOT NULL,
    fragment_metadata   jsonb,
    created_at          timestamptz DEFAULT now(),
    updated_at          timestamptz DEFAULT now(),
    learning_content_id integer REFERENCES learning_content (id) ON DELETE CASCADE
);

CREATE INDEX idx_fragment_type    ON content_fragments (fragment_type);
CREATE INDEX idx_fragment_text    ON content_fragments (native_text);
CREATE INDEX idx_fragment_content ON content_fragments (learning_content_id);

CREATE TABLE fragment_assets (
    id             serial PRIMARY KEY,
    fragment_id    integer REFERENCES content_fragments (id) ON DELETE CASCADE,
    asset_type     varchar(20) NOT NULL
        CONSTRAINT fragment_assets_asset_type_check CHECK (asset_type IN ('audio', 'image', 'video')),
    asset_data     bytea       NOT NULL,
    asset_metadata jsonb,
    created_at     timestamptz DEFAULT now(),
    created_by     varchar(100),
    -- Listings, ETags and integrity checks need the size and digest of the
    -- bytes; stored once at write time, they never cost a read of the blob.
    asset_size     bigint GENERATED ALWAYS AS (octet_length(asset_data)) STORED,
    asset_sha256   text   GENERATED ALWAYS AS (encode(sha256(asset_data), 'hex')) STORED
);

-- Audio, images and video are compressed already: pglz would only burn CPU
-- on them. Uncompressed out-of-line storage also lets substring() fetch just
-- the TOAST chunks a Range request asks for.
ALTER TABLE fragment_assets ALTER COLUMN asset_data SET STORAGE EXTERNAL;

CREATE INDEX idx_fragment_asset_type    ON fragment_assets (fragment_id, asset_type);
CREATE INDEX idx_fragment_asset_created ON fragment_assets (created_at);

CREATE TABLE rankings (
    id               serial PRIMARY KEY,
    fragment_id      integer REFERENCES content_fragments (id) ON DELETE CASCADE,
    asset_id         integer REFERENCES fragment_assets (id) ON DELETE CASCADE,
    rank_score       numeric(3, 2) DEFAULT 0.0
        CONSTRAINT rankings_rank_score_check CHECK (rank_score >= 0.0 AND rank_score <= 5.0),
    assessed_by      varchar(100) NOT NULL,
    assessment_notes text,
    created_at       timestamptz DEFAULT now(),
    updated_at       timestamptz DEFAULT now()
);

CREATE INDEX idx_rankings_fragment ON rankings (fragment_id);
CREATE INDEX idx_rankings_asset    ON rankings (asset_id);
CREATE INDEX idx_rankings_score    ON rankings (rank_score DESC);

-- On Supabase the public schema is also served by the Data API to the anon
-- and authenticated roles. These tables are reached only through the
-- functions, which connect as the owner (who bypasses RLS); without
-- policies, RLS keeps the Data API out. On a plain PostgreSQL it is inert.
ALTER TABLE learning_content  ENABLE ROW LEVEL SECURITY;
ALTER TABLE content_fragments ENABLE ROW LEVEL SECURITY;
ALTER TABLE fragment_assets   ENABLE ROW LEVEL SECURITY;
ALTER TABLE rankings          ENABLE ROW LEVEL SECURITY;
