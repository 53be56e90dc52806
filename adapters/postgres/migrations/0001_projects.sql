-- The projects the setup process takes through their states: the fields of
-- domain.Project as columns.
CREATE TABLE projects (
    id          text        PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,128}$'),
    name        text        NOT NULL DEFAULT '',
    status      text        NOT NULL CHECK (status ~ '^[a-z][a-z0-9_]{0,63}$'),
    code_repo   text        NOT NULL DEFAULT '',
    docs_repo   text        NOT NULL DEFAULT '',
    inserted_at timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
