"""Notification channels: one small sender per provider, same ``send`` interface."""

from __future__ import annotations

from voxguard.notify.channels.base import ChannelSender, SendResult, http_send
from voxguard.notify.channels.email import EmailSender
from voxguard.notify.channels.pagerduty import PagerDutySender
from voxguard.notify.channels.slack import SlackSender
from voxguard.notify.channels.webhook import WebhookSender
from voxguard.notify.config import Channel, EmailChannel, PagerDutyChannel, SlackChannel, WebhookChannel

__all__ = ["ChannelSender", "SendResult", "http_send", "make_sender"]


def make_sender(name: str, cfg: Channel, link_base: str) -> ChannelSender:
    """The sender for one configured channel."""
    if isinstance(cfg, SlackChannel):
        return SlackSender(name, cfg, link_base)
    if isinstance(cfg, PagerDutyChannel):
        return PagerDutySender(name, cfg, link_base)
    if isinstance(cfg, EmailChannel):
        return EmailSender(name, cfg, link_base)
    if isinstance(cfg, WebhookChannel):
        return WebhookSender(name, cfg, link_base)
    raise TypeError(f"unknown channel type {type(cfg).__name__}")
