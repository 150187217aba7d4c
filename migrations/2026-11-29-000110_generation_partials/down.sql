DROP TABLE generation_partials;
