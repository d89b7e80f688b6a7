"""Staff accounts: passwords, second factors, role grants, tokens and login throttling."""
