"""The integration service.

Engineers: read CONTRIBUTING.md at the repository root before your first edit
(ownership of files, how to commit while others work in the same tree).
"""
