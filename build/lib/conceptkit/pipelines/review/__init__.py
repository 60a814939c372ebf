"""Review stage: annotations in, Label Studio tasks out; people's answers back in as verified labels.
"""
