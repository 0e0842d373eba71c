"""Yihao (一号): telemedicine and cloud-hospital collaboration server."""

__version__ = "0.1.0"
