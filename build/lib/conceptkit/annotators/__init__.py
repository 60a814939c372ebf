"""What attaches concept labels to items: the embedding annotator (similarity via FAISS), and people (Label Studio).

Usable from a notebook; nothing here imports Beam.
"""
