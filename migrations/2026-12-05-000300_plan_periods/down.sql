DROP TABLE plan_periods;
