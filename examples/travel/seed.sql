-- Synthetic, deterministic seed data: 300 CRM customers, 168 loyalty members, 479
-- bookings. All addresses are under the reserved example.com/.net/.org domains and all
-- phone numbers are in the 555-01xx block reserved for fiction.
BEGIN;

CREATE TEMP TABLE first_names (n int, name text);
INSERT INTO first_names SELECT ordinality, name FROM unnest(ARRAY[
    'Olivia', 'Liam', 'Emma', 'Noah', 'Ava', 'Mateo', 'Sofia', 'Lucas', 'Mia', 'Ethan',
    'Amara', 'Kenji', 'Priya', 'Omar', 'Chloe', 'Diego', 'Hannah', 'Wei', 'Leila', 'Samuel',
    'Grace', 'Arjun', 'Nora', 'Jonas', 'Isabel', 'Malik', 'Yuki', 'Elena', 'Tariq', 'Ruby',
    'Felix', 'Zara', 'Hugo', 'Alice', 'Kofi', 'Ingrid', 'Rafael', 'Maya', 'Daniel', 'Lena'
]) WITH ORDINALITY AS t(name);

CREATE TEMP TABLE last_names (n int, name text);
INSERT INTO last_names SELECT ordinality, name FROM unnest(ARRAY[
    'Smith', 'Garcia', 'Nguyen', 'Johnson', 'Patel', 'Kim', 'Brown', 'Silva', 'Miller', 'Chen',
    'Davis', 'Rossi', 'Okafor', 'Wilson', 'Haddad', 'Moore', 'Tanaka', 'Lopez', 'Clark', 'Novak',
    'Walker', 'Costa', 'Young', 'Schmidt', 'Allen', 'Ivanova', 'King', 'Mensah', 'Wright', 'Dubois',
    'Scott', 'Khan', 'Green', 'Larsen', 'Baker', 'Moreau', 'Adams', 'Sato', 'Nelson', 'Reyes'
]) WITH ORDINALITY AS t(name);

-- Home cities with their area codes, so phone numbers look local.
CREATE TEMP TABLE cities (n int, city text, area text);
INSERT INTO cities VALUES
    (1, 'San Francisco', '415'), (2, 'New York', '212'), (3, 'Chicago', '312'),
    (4, 'Boston', '617'), (5, 'Seattle', '206'), (6, 'Miami', '305'), (7, 'Austin', '512'),
    (8, 'Denver', '303'), (9, 'Atlanta', '404'), (10, 'Los Angeles', '213'),
    (11, 'Portland', '503'), (12, 'Philadelphia', '215'), (13, 'Phoenix', '602'),
    (14, 'Minneapolis', '612'), (15, 'Nashville', '615'), (16, 'San Diego', '619'),
    (17, 'Dallas', '214'), (18, 'Houston', '713'), (19, 'Detroit', '313'), (20, 'Las Vegas', '702');

-- The customer the tour follows: one CRM record, two loyalty accounts (one found by a
-- differently written email, one only by phone) and bookings under both emails.
INSERT INTO crm.customers (name, email, phone, city, updated_at)
VALUES ('Ana Lima', 'ana.lima@example.com', '(415) 555-0100', 'San Francisco', now() - interval '400 days');

-- Customers 2..300 (in order, so that row i gets id i). Phone numbers are unique: area code from the city, last two digits
-- from the row number; every seventh customer gave no phone.
INSERT INTO crm.customers (name, email, phone, city, updated_at)
SELECT f.name || ' ' || l.name,
       lower(f.name) || '.' || lower(l.name) || i || '@'
           || (ARRAY['example.com', 'example.net', 'example.org'])[i % 3 + 1],
       CASE WHEN i % 7 = 0 THEN NULL
            ELSE format('(%s) 555-01%s', c.area, lpad(((i - 1) / 20)::text, 2, '0')) END,
       c.city,
       now() - make_interval(hours => i * 29)
FROM generate_series(2, 300) AS i
JOIN first_names f ON f.n = (i * 7) % 40 + 1
JOIN last_names l ON l.n = (i * 3 + i / 40) % 40 + 1
JOIN cities c ON c.n = (i - 1) % 20 + 1
ORDER BY i;

-- Ana's loyalty accounts.
INSERT INTO loyalty.members (email, phone, tier, points) VALUES
    ('  Ana.Lima@Example.com ', NULL, 'gold', 48200),
    ('ana.travels@example.net', '+1 415.555.0100', 'silver', 6150);

-- Members who joined with the CRM email, written differently (upper case, stray spaces,
-- capitalised), half of them with their phone in another format.
INSERT INTO loyalty.members (email, phone, tier, points)
SELECT CASE (id / 3) % 3
           WHEN 0 THEN upper(email)
           WHEN 1 THEN '  ' || email || ' '
           ELSE initcap(email) END,
       CASE WHEN id % 2 = 0 AND phone IS NOT NULL
            THEN '+1 ' || regexp_replace(phone, '\D', '', 'g') END,
       (ARRAY['blue', 'blue', 'blue', 'silver', 'silver', 'gold', 'platinum'])[id % 7 + 1],
       (id * 7919) % 90000
FROM crm.customers
WHERE id > 1 AND id % 3 = 0;

-- Members who signed up with a personal email: linked to the CRM only by phone.
INSERT INTO loyalty.members (email, phone, tier, points)
SELECT lower(split_part(name, ' ', 1)) || '.travels' || id || '@example.net',
       regexp_replace(phone, '^\((\d{3})\) (\d{3})-(\d{4})$', '+1 \1.\2.\3'),
       (ARRAY['blue', 'silver', 'gold'])[id % 3 + 1],
       (id * 104729) % 40000
FROM crm.customers
WHERE id % 10 = 5 AND phone IS NOT NULL;

-- Members the CRM does not know at all.
INSERT INTO loyalty.members (email, phone, tier, points)
SELECT lower(f.name) || '.' || lower(l.name) || (1000 + i) || '@example.org',
       NULL,
       (ARRAY['blue', 'silver'])[i % 2 + 1],
       (i * 811) % 20000
FROM generate_series(1, 40) AS i
JOIN first_names f ON f.n = (i * 13) % 40 + 1
JOIN last_names l ON l.n = (i * 17) % 40 + 1;

CREATE TEMP TABLE destinations (n int, name text);
INSERT INTO destinations SELECT ordinality, name FROM unnest(ARRAY[
    'Lisbon', 'Tokyo', 'Reykjavik', 'Cape Town', 'Lima', 'Kyoto', 'Marrakesh', 'Barcelona',
    'Hanoi', 'Vancouver', 'Buenos Aires', 'Queenstown', 'Istanbul', 'Cusco', 'Bali',
    'Edinburgh', 'Santorini', 'Mexico City', 'Seoul', 'Nairobi', 'Oslo', 'Havana',
    'Dubrovnik', 'Bangkok', 'Honolulu'
]) WITH ORDINALITY AS t(name);

-- Ana's bookings: under her CRM email (once written in capitals) and her loyalty email.
INSERT INTO bookings.bookings (customer_email, destination, amount, status) VALUES
    ('ana.lima@example.com', 'Lisbon', 1240, 'confirmed'),
    ('ana.lima@example.com', 'Kyoto', 3180, 'confirmed'),
    ('ANA.LIMA@example.com', 'Reykjavik', 2150, 'confirmed'),
    ('ana.travels@example.net', 'Cusco', 1870, 'confirmed');

-- 0 to 3 bookings per CRM customer, now and then with the email in capitals.
INSERT INTO bookings.bookings (customer_email, destination, amount, status)
SELECT CASE WHEN (c.id + b) % 5 = 0 THEN upper(c.email) ELSE c.email END,
       d.name,
       150 + (c.id * 37 + b * 911) % 2850,
       'confirmed'
FROM crm.customers c
CROSS JOIN generate_series(1, 3) AS b
JOIN destinations d ON d.n = (c.id * 11 + b * 7) % 25 + 1
WHERE c.id > 1 AND c.email IS NOT NULL AND b <= c.id % 4;

-- Some bookings under the personal emails of the phone-linked members.
INSERT INTO bookings.bookings (customer_email, destination, amount, status)
SELECT m.email, d.name, 300 + (m.id * 53) % 2400, 'confirmed'
FROM loyalty.members m
JOIN destinations d ON d.n = (m.id * 3) % 25 + 1
WHERE m.email LIKE '%.travels%@example.net' AND m.id > 2;

COMMIT;
