"""SMS gateways: an operator's HTTP API or an SMSC over SMPP 3.4.

`SmsGateway` is the port (`SmsChannel` in `channels.py` adapts it to a `Channel`).
`HttpSmsGateway` POSTs ``{"to", "text", "id"}`` with a bearer token: most Russian SMS
aggregators offer such an API, and the `id` lets the gateway drop a retried duplicate.
`SmppSmsGateway` talks SMPP 3.4 to an SMSC with smpplib (the only module that imports it): one
short session per message — connect, bind_transmitter, submit_sm per part, unbind — because
alarm SMS are rare and a long-lived bind needs keep-alives and reconnects that would be more
code to go wrong than the ~3 round trips it saves. smpplib is blocking, so the session runs in
a worker thread.

Encoding: text in the GSM 7-bit alphabet goes as data_coding 0 (SMSC default); anything else
(Cyrillic) as UCS-2 (data_coding 8). Longer texts are split by `smpplib.gsm.make_parts` into
parts with a concatenation header (UDHI), which phones reassemble.
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from typing import Any, Final

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm
import smpplib.smpp

from realtime.notify._http import post
from realtime.notify.model import DeliveryFailed

__all__ = ["HttpSmsGateway", "SmppSmsGateway", "SmsGateway"]

log = logging.getLogger(__name__)

# SMPP statuses that mean "later" rather than "never" (system error, throttled, queue full)
_TEMPORARY_SMPP: Final = frozenset({smpplib.consts.SMPP_ESME_RSYSERR,
                                     smpplib.consts.SMPP_ESME_RTHROTTLED,
                                     smpplib.consts.SMPP_ESME_RMSGQFUL})


class SmsGateway(ABC):
    """Sends one text to one phone number."""

    @abstractmethod
    async def send_sms(self, to: str, text: str, message_id: str) -> None:
        """Hand `text` to the gateway for `to` (E.164); raise `DeliveryFailed` if it refuses."""


class HttpSmsGateway(SmsGateway):
    """An HTTP SMS API: POST JSON ``{"to", "text", "id"}`` with ``Authorization: Bearer``."""

    def __init__(self, url: str, token: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self._token = token
        self.timeout_s = timeout_s

    async def send_sms(self, to: str, text: str, message_id: str) -> None:
        """POST the message; 2xx is accepted (see `_http` for the failure classes)."""
        body = json.dumps({"to": to, "text": text, "id": message_id}, ensure_ascii=False).encode()
        headers = {"content-type": "application/json", "authorization": f"Bearer {self._token}"}
        await post(self.url, body, headers, self.timeout_s, "SMS gateway")


class SmppSmsGateway(SmsGateway):
    """An SMSC over SMPP 3.4, one transmitter session per message."""

    def __init__(self, host: str, port: int, system_id: str, password: str, source_addr: str,
                 timeout_s: float = 10.0, system_type: str = "") -> None:
        self.host = host
        self.port = port
        self.system_id = system_id
        self._password = password
        self.source_addr = source_addr
        self.timeout_s = timeout_s
        self.system_type = system_type

    async def send_sms(self, to: str, text: str, message_id: str) -> None:
        """Submit `text` (split into parts when long); return when the SMSC accepted each part."""
        ids = await asyncio.to_thread(self._session, to, text)
        log.debug("SMS %s accepted by the SMSC as %s", message_id, ids)

    def _session(self, to: str, text: str) -> list[str]:
        parts, coding, esm_class = smpplib.gsm.make_parts(text)
        client = smpplib.client.Client(self.host, self.port, timeout=self.timeout_s,
                                       logger_name=f"{__name__}.smpp",
                                       allow_unknown_opt_params=True)
        try:
            try:
                client.connect()
                client.bind_transmitter(system_id=self.system_id, password=self._password,
                                        system_type=self.system_type)
            except smpplib.exceptions.PDUError as exc:
                raise _pdu_failure("bind refused", exc) from exc
            except (smpplib.exceptions.ConnectionError, OSError) as exc:
                raise DeliveryFailed(f"SMSC {self.host}:{self.port} unreachable: {exc!r}",
                                     permanent=False) from exc
            ids = [self._submit(client, to, part, coding, esm_class) for part in parts]
            try:
                client.unbind()
            except (smpplib.exceptions.PDUError, smpplib.exceptions.ConnectionError, OSError) as exc:
                log.info("SMSC unbind failed after a successful submit (ignored): %r", exc)
            return ids
        finally:
            client.disconnect()

    def _submit(self, client: smpplib.client.Client, to: str, part: bytes, coding: int,
                esm_class: int) -> str:
        alnum = not self.source_addr.lstrip("+").isdigit()
        try:
            pdu = client.send_message(
                source_addr_ton=smpplib.consts.SMPP_TON_ALNUM if alnum else smpplib.consts.SMPP_TON_INTL,
                source_addr_npi=smpplib.consts.SMPP_NPI_UNK if alnum else smpplib.consts.SMPP_NPI_ISDN,
                source_addr=self.source_addr.lstrip("+"),
                dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                destination_addr=to.lstrip("+"),
                short_message=part, data_coding=coding, esm_class=esm_class,
                registered_delivery=0)
            resp = _response(client, pdu.sequence)
        except smpplib.exceptions.PDUError as exc:
            raise _pdu_failure("submit_sm refused", exc) from exc
        except (smpplib.exceptions.ConnectionError, OSError) as exc:  # socket.timeout included
            raise DeliveryFailed(f"SMSC connection lost during submit_sm: {exc!r}",
                                 permanent=False) from exc
        message_id = resp.message_id
        return message_id.decode() if isinstance(message_id, bytes) else str(message_id or "")


def _response(client: smpplib.client.Client, sequence: int) -> Any:
    """The submit_sm_resp of `sequence`, answering enquire_links the SMSC sends meanwhile."""
    while True:
        try:
            pdu = client.read_pdu()
        except TimeoutError as exc:
            raise smpplib.exceptions.ConnectionError("no submit_sm_resp in time") from exc
        if pdu.command == "enquire_link":
            resp = smpplib.smpp.make_pdu("enquire_link_resp", client=client)
            resp.sequence = pdu.sequence
            client.send_pdu(resp)
            continue
        if pdu.command in ("submit_sm_resp", "generic_nack") and pdu.sequence == sequence:
            if pdu.is_error():
                raise smpplib.exceptions.PDUError(f"{pdu.command} status {pdu.status:#x}",
                                                  int(pdu.status))
            return pdu
        log.debug("SMSC sent %s while waiting for submit_sm_resp; ignored", pdu.command)


def _pdu_failure(what: str, exc: smpplib.exceptions.PDUError) -> DeliveryFailed:
    """Permanent unless the SMSC said "later": a refused bind (wrong password or system_id) or
    a refused destination does not fix itself by being retried."""
    status = int(exc.args[1]) if len(exc.args) > 1 else -1
    name = smpplib.consts.DESCRIPTIONS.get(status, "unknown status")
    return DeliveryFailed(f"SMSC {what}: {name} ({status:#x})",
                          permanent=status not in _TEMPORARY_SMPP)
