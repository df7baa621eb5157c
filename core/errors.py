"""Errors any part of the arena may raise when a backing service is unreachable.

`core.middleware.service_unavailable_middleware` answers them (and the raw connection errors
of the database, Redis and the broker) with a plain 503 page instead of a server error.
"""

from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

UNAVAILABLE_MESSAGE = "The arena is temporarily unavailable; please try again in a minute."


class ServiceUnavailableError(Exception):
    """A service the request needs (broker, database, stream hub) cannot be reached.

    `message` is fit to show a visitor; the cause stays in the logs.
    """

    def __init__(self, message: str = UNAVAILABLE_MESSAGE):
        super().__init__(message)
        self.message = message


# Connection failures of the services behind the arena, as the libraries raise them.
# The cache (Django's Redis backend, in service mode):
CACHE_ERRORS = (RedisConnectionError, RedisTimeoutError)
BROKER_ERRORS = (BrokerOperationalError, RedisConnectionError, RedisTimeoutError, OSError)
UNAVAILABLE_ERRORS = (
    ServiceUnavailableError,
    DatabaseOperationalError,
    DatabaseInterfaceError,
    BrokerOperationalError,
    RedisConnectionError,
    RedisTimeoutError,
)
