"""Storage: the `ResourceStore` port and its adapters (sqlite, and later mongo).

Adapters compile the storage-neutral SearchQuery into their own query language; nothing
else differs between them. Adapters never import each other or anything above storage.
"""
