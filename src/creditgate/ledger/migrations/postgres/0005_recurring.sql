-- 0005: the accounts whose recurring charges are due (ledger/due.py): the mirror of each
-- account's earliest due ('rcd', rules.lua's recurring()), found without a scan of every field.
CREATE INDEX account_fields_recurring ON account_fields (account) WHERE field = 'rcd';
