"""Who may do what: API tokens, worker OTPs and resume tokens, the secret vault, the agents'
certificate authority, mTLS and the audit trail."""
