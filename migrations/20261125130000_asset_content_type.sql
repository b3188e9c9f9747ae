-- The media type an asset was uploaded with (its Content-Type), served back
-- with its bytes. NULL for assets that arrived without one; the API then
-- answers application/octet-stream.
ALTER TABLE fragment_assets
    ADD COLUMN content_type varchar(100)
        CONSTRAINT fragment_assets_content_type_check
        CHECK (content_type ~ '^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+( *;.*)?$');
