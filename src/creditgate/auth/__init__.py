"""Who may call what: bearer tokens, the role permission table, the audit trail, safe exposure."""
