-- The Billing DB as the external billing system keeps it, for the tests only.
--
-- etrans never runs DDL against DB_URI: the tests create this schema themselves (as the database
-- owner) and connect etrans through a SELECT-only role.  The tables carry a few columns etrans does
-- not map (marked "not read"), as a real billing schema would; etrans must cope with them.
-- docs/database.md documents the columns etrans reads; a test checks that every mapped column of
-- etrans.adapters.sql.billing exists here.

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    email       varchar(320) NOT NULL UNIQUE,
    full_name   varchar(255),                            -- not read
    balance     numeric(14, 2) NOT NULL DEFAULT 0,
    is_owner    boolean NOT NULL DEFAULT true,
    parent_id   bigint REFERENCES users (id),            -- not read
    created_at  timestamptz DEFAULT now()
);

CREATE TABLE domain (
    id           bigserial PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id),
    name         varchar(253) NOT NULL,
    status       varchar(16) NOT NULL DEFAULT 'pending',
    verified_at  timestamptz,
    created_at   timestamptz DEFAULT now(),
    updated_at   timestamptz DEFAULT now(),
    deleted_at   timestamptz,
    billing_ref  varchar(64)                             -- not read
);
CREATE UNIQUE INDEX domain_name_live ON domain (name) WHERE deleted_at IS NULL;
CREATE INDEX domain_user_id ON domain (user_id);

CREATE TABLE dkim (
    id           bigserial PRIMARY KEY,
    domain_id    bigint NOT NULL REFERENCES domain (id) ON DELETE CASCADE,
    selector     varchar(63) NOT NULL DEFAULT 'dkim',
    public_key   text NOT NULL,
    private_key  text,                                   -- PEM: read by sendmail to sign
    created_at   timestamptz DEFAULT now()
);
CREATE INDEX dkim_domain_id ON dkim (domain_id);

CREATE TABLE mkt_domain (
    domain_id        bigint PRIMARY KEY REFERENCES domain (id) ON DELETE CASCADE,
    pack_code        varchar(64),
    pack_name        varchar(255),
    daily_limit      bigint,
    hourly_limit     bigint,
    monthly_limit    bigint,
    daily_tracking   bigint NOT NULL DEFAULT 0,
    hourly_tracking  bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz DEFAULT now()
);

CREATE TABLE temporary_password (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    username    varchar(320) NOT NULL,
    password    text NOT NULL,
    expires_at  timestamptz,
    created_at  timestamptz DEFAULT now()
);
CREATE INDEX temporary_password_user_id ON temporary_password (user_id);
