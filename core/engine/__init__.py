"""The conversation: keywords first, then one playbook step per inbound message."""
