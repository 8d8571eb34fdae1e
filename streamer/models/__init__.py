"""Model weights from the Hugging Face Hub: the catalogue (catalogue.py), fetching and checking files
(hub.py), `streamer models pull` / `list` (pull.py, commands.py).

Not to be confused with streamer/model/, the model code itself.
"""
