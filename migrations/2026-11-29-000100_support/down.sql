DROP TABLE policy_notices;
DROP TABLE support_requests;
