"""Reading and writing datasets: webdataset shards, annotation tables, bins files, caches."""
