"""Helpers the tests share: namespace labs, the WireGuard lab, the in-memory device pair."""
