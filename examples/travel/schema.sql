-- The three systems of a travel company, as three schemas of one database (`travel`).
-- Tidewater names the tables database.schema.table: travel.crm.customers,
-- travel.loyalty.members and travel.bookings.bookings.

CREATE SCHEMA crm;
CREATE SCHEMA loyalty;
CREATE SCHEMA bookings;

-- The CRM: one row per customer, contact details as the sales team typed them.
CREATE TABLE crm.customers (
    id         serial PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    phone      text,
    city       text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The loyalty programme: members signed up on their own, so their email and phone are
-- written however they typed them, and some use a different email than the CRM knows.
CREATE TABLE loyalty.members (
    id     serial PRIMARY KEY,
    email  text,
    phone  text,
    tier   text NOT NULL,
    points int  NOT NULL DEFAULT 0
);

-- The booking engine: only knows the email the booking was made with.
CREATE TABLE bookings.bookings (
    id             serial PRIMARY KEY,
    customer_email text NOT NULL,
    destination    text NOT NULL,
    amount         int  NOT NULL,
    status         text NOT NULL DEFAULT 'confirmed'
);
