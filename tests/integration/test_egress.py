"""The way out: https upstreams under a private CA (and a client certificate), and an egress
proxy, as companies run them. A certificate nobody vouches for is a clear error, never a
quiet downgrade."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import Gateway, start_gateway
from tests.standins.egress import PKI, Proxy, make_pki
from tests.standins.openai_upstream import StandInUpstream

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _server_tls(pki: PKI, require_client: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    return context


@pytest.fixture(scope="module")
def tls_upstream(pki: PKI) -> Iterator[StandInUpstream]:
    stand_in = StandInUpstream(tls=_server_tls(pki, require_client=False)).start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="module")
def mtls_upstream(pki: PKI) -> Iterator[StandInUpstream]:
    stand_in = StandInUpstream(tls=_server_tls(pki, require_client=True)).start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="module")
def plain_upstream() -> Iterator[StandInUpstream]:
    stand_in = StandInUpstream().start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="module")
def proxy() -> Proxy:
    return Proxy()


def https(upstream: StandInUpstream) -> str:
    return f"https://127.0.0.1:{upstream.port}/v1"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, pki: PKI, tls_upstream: StandInUpstream,
       mtls_upstream: StandInUpstream, plain_upstream: StandInUpstream, proxy: Proxy) -> Iterator[Gateway]:
    def model(base_url: str, **options: Any) -> dict[str, Any]:
        return {"deployments": [{"provider": "openai", "base_url": base_url, "model": "ok", "catalog": "gpt-5.2",
                                 "retries": 0, "timeouts": {"connect": 5, "read": 10}, **options}]}

    config = {"models": {
        "private-ca": model(https(tls_upstream), ca_file=str(pki.ca)),
        "wrong-ca": model(https(tls_upstream), ca_file=str(pki.other_ca)),
        "system-ca": model(https(tls_upstream)),
        "client-cert": model(https(mtls_upstream), ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                             key_file=str(pki.client_key)),
        "no-client-cert": model(https(mtls_upstream), ca_file=str(pki.ca)),
        "https-via-proxy": model(https(tls_upstream), ca_file=str(pki.ca), proxy=proxy.url),
        "http-via-env-proxy": model(plain_upstream.base_url),
        "http-direct": model(plain_upstream.base_url, proxy="none"),
    }}
    # The environment's proxy, as a company sets it; a deployment's own `proxy: none` overrides it.
    env = {"HTTP_PROXY": proxy.url, "NO_PROXY": "example.invalid"}
    gateway = start_gateway(tmp_path_factory.mktemp("egress"), config=config, env=env)
    yield gateway
    gateway.stop()


def test_an_upstream_under_a_private_ca_is_trusted_with_its_ca_file(gw: Gateway) -> None:
    reply = gw.client().chat.completions.create(model="private-ca", messages=HELLO)
    assert reply.choices[0].message.content


@pytest.mark.parametrize("model", ["wrong-ca", "system-ca"])
def test_a_certificate_nobody_vouches_for_is_refused(gw: Gateway, model: str) -> None:
    with pytest.raises(openai.APIStatusError) as failed:
        gw.client().chat.completions.create(model=model, messages=HELLO)
    assert failed.value.status_code == 502 and failed.value.code == "upstream_connection_error"
    assert "certificate" not in failed.value.message  # the detail is for the operator's log...
    assert "CERTIFICATE_VERIFY_FAILED" in gw.logs() or "certificate verify failed" in gw.logs()


def test_a_client_certificate_is_presented(gw: Gateway) -> None:
    assert gw.client().chat.completions.create(model="client-cert", messages=HELLO).choices
    with pytest.raises(openai.APIStatusError) as failed:
        gw.client().chat.completions.create(model="no-client-cert", messages=HELLO)
    assert failed.value.status_code == 502


def test_https_goes_through_the_proxys_tunnel(gw: Gateway, proxy: Proxy, tls_upstream: StandInUpstream) -> None:
    before = len(proxy.asked)
    assert gw.client().chat.completions.create(model="https-via-proxy", messages=HELLO).choices
    assert f"CONNECT 127.0.0.1:{tls_upstream.port}" in proxy.asked[before:]


def test_plain_http_follows_the_environments_proxy_unless_told_otherwise(
    gw: Gateway, proxy: Proxy, plain_upstream: StandInUpstream,
) -> None:
    before = len(proxy.asked)
    assert gw.client().chat.completions.create(model="http-via-env-proxy", messages=HELLO).choices
    assert f"POST http://127.0.0.1:{plain_upstream.port}/v1/chat/completions" in proxy.asked[before:]
    seen = len(proxy.asked)
    assert gw.client().chat.completions.create(model="http-direct", messages=HELLO).choices
    assert len(proxy.asked) == seen  # `proxy: none`: straight to the upstream


def test_a_missing_ca_file_stops_serve_with_one_line(tmp_path: Path) -> None:
    config = {"models": {"x": {"deployments": [{"provider": "openai", "base_url": "https://127.0.0.1:1/v1",
                                                "model": "x", "catalog": "gpt-5.2", "ca_file": "/nope/ca.pem"}]}}}
    with pytest.raises(RuntimeError) as failed:
        start_gateway(tmp_path, config=config)
    assert "ca_file /nope/ca.pem is not a readable file" in str(failed.value)


def test_no_proxy_exempts_a_host(tmp_path: Path, plain_upstream: StandInUpstream, proxy: Proxy) -> None:
    config = {"models": {"direct": {"deployments": [{"provider": "openai", "base_url": plain_upstream.base_url,
                                                     "model": "ok", "catalog": "gpt-5.2"}]}}}
    gw = start_gateway(tmp_path, config=config, env={"HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"})
    try:
        before = len(proxy.asked)
        assert gw.client().chat.completions.create(model="direct", messages=HELLO).choices
        assert len(proxy.asked) == before
    finally:
        gw.stop()
