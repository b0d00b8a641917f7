"""Selling access: redemption codes sold in batches, and the referral program that pays
commission in credit; both move money only through ledger entries (accounts.postings)."""
