"""Tests of pyhello."""
