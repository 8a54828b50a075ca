"""The long-lived objects one relay process shares between its routes."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from relay.auth import Signer
from relay.conversations import ChatService
from relay.hub import Hub
from relay.inbox import InboxService
from relay.mail import MailService
from relay.nojs import NoScriptVisitors
from relay.ratelimit import Guard
from relay.settings import Settings
from relay.store import Store


@dataclass
class Services:
    """The objects the lifespan opens: settings, storage, connections and chats."""

    settings: Settings
    store: Store
    hub: Hub
    chat: ChatService
    signer: Signer
    guard: Guard
    nojs: NoScriptVisitors
    inbox: InboxService
    # None unless VSO_MAIL_ADDRESS is set.
    mail: MailService | None = None


def get_services(connection: HTTPConnection) -> Services:
    """Return the services of the app serving this request or WebSocket."""
    services = getattr(connection.app.state, "services", None)
    if not isinstance(services, Services):
        raise RuntimeError("The relay's services are not open; is the lifespan on?")
    return services
