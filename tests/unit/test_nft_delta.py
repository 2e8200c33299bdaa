"""The smallest nftables transaction for a change (pure): listing parsed with handles, rules
replaced/inserted/deleted by handle, neighbours untouched, order kept, a rebuild when needed."""

from __future__ import annotations

from weaved.compile.firewall import rule
from weaved.dataplane.nft_delta import STRAY, delta_script, parse_listing
from weaved.model.resources import Kind, Resource, State, attrs

HEAD = "table ip weaved { # handle 1\n\tchain output { # handle 2\n"
HOOK = "\t\ttype nat hook output priority dstnat; policy accept;\n"


def listing_text(rules: list[tuple[str, str, int]], extra: str = "") -> str:
    lines = [f'\t\t{body} comment "wd:{rid}" # handle {h}' for body, rid, h in rules]
    return HEAD + HOOK + "\n".join(lines) + "\n\t}\n" + extra + "}\n"


def desired(*rules: Resource) -> State:
    return State.of(
        [
            Resource("nft/ip/weaved", Kind.NFT_TABLE, attrs(family="ip")),
            Resource(
                "nft/ip/weaved/output",
                Kind.NFT_CHAIN,
                attrs(type="nat", hook="output", priority=-100, policy="accept"),
            ),
            *rules,
        ]
    )


def r(name: str, port: int) -> Resource:
    return rule("ip", "output", name, f"tcp dport {port} accept")


def listed(*rules: Resource, handles: tuple[int, ...] = ()) -> str:
    rows = []
    for index, res in enumerate(rules):
        rid = res.key.rsplit("/", 1)[1]
        rows.append(
            (res.body, f"{rid}:{res.get('hash')}", handles[index] if handles else 10 + index)
        )
    return listing_text(rows)


def test_listing_keeps_handles_order_and_shows_stray_rules() -> None:
    a, b = r("a", 1), r("b", 2)
    text = listing_text(
        [
            (a.body, f"a:{a.get('hash')}", 10),
            (a.body, f"a:{a.get('hash')}", 11),  # a hand-made copy of ours
            (b.body, f"b:{b.get('hash')}", 12),
        ]
    ).replace("\t}\n}", "\t\ttcp dport 9 drop # handle 13\n\t}\n}")
    got = parse_listing("ip", text)
    assert [(x.rule_id, x.handle) for x in got.chains[("ip", "output")]] == [
        ("a", 10),
        (f"{STRAY}11", 11),
        ("b", 12),
        (f"{STRAY}13", 13),
    ]
    keys = {x.key for x in got.resources}
    assert "nft/ip/weaved/output/~handle-13" in keys and "nft/ip/weaved/output/a" in keys
    chain = next(x for x in got.resources if x.kind is Kind.NFT_CHAIN)
    assert chain.get("priority") == "-100" and not got.others


def test_a_changed_rule_is_replaced_in_place_and_its_neighbours_untouched() -> None:
    a, b, c = r("a", 1), r("b", 2), r("c", 3)
    listing = parse_listing("ip", listed(a, b, c))
    b2 = r("b", 22)
    delta = delta_script(desired(a, b2, c), listing)
    assert delta is not None
    script, after = delta
    assert script == (
        f'replace rule ip weaved output handle 11 tcp dport 22 accept comment "wd:b:{b2.get("hash")}"\n'
    )
    assert [(x.rule_id, x.handle) for x in after[("ip", "output")]] == [
        ("a", 10),
        ("b", 11),
        ("c", 12),
    ]


def test_new_rules_go_before_the_next_kept_rule_in_order_and_unwanted_are_deleted() -> None:
    a, b, c = r("a", 1), r("b", 2), r("c", 3)
    listing = parse_listing("ip", listed(a, b, c))
    n1, n2, n3 = r("n1", 4), r("n2", 5), r("n3", 6)
    script, after = delta_script(desired(n1, a, n2, c, n3), listing) or ("", {})
    assert script.splitlines() == [
        "delete rule ip weaved output handle 11",
        f'insert rule ip weaved output position 10 tcp dport 4 accept comment "wd:n1:{n1.get("hash")}"',
        f'insert rule ip weaved output position 12 tcp dport 5 accept comment "wd:n2:{n2.get("hash")}"',
        f'add rule ip weaved output tcp dport 6 accept comment "wd:n3:{n3.get("hash")}"',
    ]
    assert [(x.rule_id, x.handle) for x in after[("ip", "output")]] == [
        ("n1", 0),
        ("a", 10),
        ("n2", 0),
        ("c", 12),
        ("n3", 0),
    ]


def test_two_new_rules_before_one_anchor_keep_their_order() -> None:
    a = r("a", 1)
    listing = parse_listing("ip", listed(a))
    script, _ = delta_script(desired(r("x", 2), r("y", 3), a), listing) or ("", {})
    assert [line.split('"wd:')[1][:2] for line in script.splitlines()] == ["x:", "y:"]
    assert all("position 10" in line for line in script.splitlines())


def test_stray_and_duplicate_rules_are_deleted_by_handle() -> None:
    a = r("a", 1)
    text = listing_text(
        [(a.body, f"a:{a.get('hash')}", 10), (a.body, f"a:{a.get('hash')}", 11)]
    ).replace("\t}\n}", "\t\ttcp dport 9 drop # handle 13\n\t}\n}")
    script, _ = delta_script(desired(a), parse_listing("ip", text)) or ("", {})
    assert script.splitlines() == [
        "delete rule ip weaved output handle 11",
        "delete rule ip weaved output handle 13",
    ]


def test_rules_out_of_order_rewrite_the_chain() -> None:
    a, b = r("a", 1), r("b", 2)
    listing = parse_listing("ip", listed(b, a))
    script, after = delta_script(desired(a, b), listing) or ("", {})
    assert script.splitlines()[0] == "flush chain ip weaved output"
    assert len(script.splitlines()) == 3
    assert all(x.handle == 0 for x in after[("ip", "output")])


def test_in_sync_is_an_empty_script() -> None:
    a, b = r("a", 1), r("b", 2)
    assert delta_script(desired(a, b), parse_listing("ip", listed(a, b))) == ("", {})


def test_what_only_a_rebuild_can_do() -> None:
    a = r("a", 1)
    listing = parse_listing("ip", listed(a))
    other_chain = {
        **desired(a).resources,
        "nft/ip/weaved/output": Resource(
            "nft/ip/weaved/output",
            Kind.NFT_CHAIN,
            attrs(type="nat", hook="output", priority=-100, policy="drop"),
        ),
    }
    assert delta_script(State(other_chain), listing) is None  # a chain changed
    assert delta_script(State(), listing) is None  # the table goes
    with_set = listing_text([], "\tset s { # handle 3\n\t\ttype ipv4_addr\n\t}\n")
    assert "nftset/ip/weaved/s" in {x.key for x in parse_listing("ip", with_set).resources}
    assert delta_script(desired(a), parse_listing("ip", with_set)) is None
    hand_chain = listing_text([]).replace("}\n}", "}\n\tchain mine { # handle 9\n\t}\n}")
    hand = parse_listing("ip", hand_chain)
    assert "nft/ip/weaved/mine" in {x.key for x in hand.resources}
    assert delta_script(desired(a), hand) is None


def free(name: str, port: int) -> Resource:
    return rule("ip", "output", name, f"tcp dport {port} accept", any_order=True)


def test_a_changed_any_order_rule_is_deleted_and_added_at_the_end_without_a_replace() -> None:
    # A replace (or positioned insert) makes libnftables fetch every rule of the ruleset.
    g, a, b, c = r("g", 1), free("a", 2), free("b", 3), free("c", 4)
    listing = parse_listing("ip", listed(g, a, b, c))
    b2 = free("b", 33)
    script, after = delta_script(desired(g, a, b2, c), listing) or ("", {})
    assert b2.get("hash").endswith("*")
    assert script.splitlines() == [
        "delete rule ip weaved output handle 12",
        f'add rule ip weaved output tcp dport 33 accept comment "wd:b:{b2.get("hash")}"',
    ]
    assert [(x.rule_id, x.handle) for x in after[("ip", "output")]] == [
        ("g", 10),
        ("a", 11),
        ("c", 13),
        ("b", 0),  # where the kernel has it now
    ]


def test_any_order_rules_in_another_order_are_in_sync() -> None:
    g, a, b = r("g", 1), free("a", 2), free("b", 3)
    assert delta_script(desired(g, a, b), parse_listing("ip", listed(g, b, a))) == ("", {})


def test_a_new_ordered_rule_goes_before_the_any_order_tail_as_the_kernel_has_it() -> None:
    g, a, b = r("g", 1), free("a", 2), free("b", 3)
    listing = parse_listing("ip", listed(g, b, a, handles=(10, 11, 12)))
    n = r("n", 9)
    script, after = delta_script(desired(g, n, a, b), listing) or ("", {})
    assert script.splitlines() == [
        f'insert rule ip weaved output position 11 tcp dport 9 accept comment "wd:n:{n.get("hash")}"'
    ]
    assert [x.rule_id for x in after[("ip", "output")]] == ["g", "n", "b", "a"]


def test_an_ordered_rule_among_the_any_order_ones_rewrites_the_chain() -> None:
    g, a, b = r("g", 1), free("a", 2), free("b", 3)
    listing = parse_listing("ip", listed(a, g, b))
    script, _ = delta_script(desired(g, a, b), listing) or ("", {})
    assert script.splitlines()[0] == "flush chain ip weaved output"


def test_a_marked_rule_with_an_ordered_one_after_it_keeps_its_place() -> None:
    a, g = free("a", 2), r("g", 1)
    listing = parse_listing("ip", listed(a, g))
    a2 = free("a", 22)
    script, _ = delta_script(desired(a2, g), listing) or ("", {})
    assert script.startswith("replace rule ip weaved output handle 10 ")
    assert delta_script(desired(g, a), listing) is not None  # out of order: rewritten
    assert (delta_script(desired(g, a), listing) or ("", {}))[0].startswith("flush chain")
