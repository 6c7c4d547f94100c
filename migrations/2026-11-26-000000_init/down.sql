DROP TABLE reservation_items;
DROP TABLE reservations;
DROP TABLE menus;
DROP TABLE slots;
DROP TABLE restaurants;
