"""Percentage word problems: percent of an amount, discount and markup, and the price
before a change (reverse percentages).

Same contract as :mod:`cotune.data.tasks_arith`: short labelled claims that
:mod:`cotune.verify` can check, and an independent exact ``check`` of the answer. The
wording helpers are shared with :mod:`cotune.data.tasks_words`.
"""

from __future__ import annotations

import random
from fractions import Fraction as F

from cotune.data import steps as S
from cotune.data.phrasing import ITEMS, NAMES, HeldOut, phrase, spell
from cotune.data.tasks_arith import Problem
from cotune.data.tasks_words import GOODS, currency, lab, money, say
from cotune.format import format_number as fmt

# --------------------------------------------------------------------------- percent


def percent(rng: random.Random, d: int) -> Problem:
    if d < 3:
        p = rng.choice((10, 20, 25, 50, 75)) if d == 1 else rng.randrange(5, 100, 5)
        base = rng.randrange(20, 400, 20) if d == 1 else rng.randrange(40, 2000, 20)
        v = F(base * p, 100)
        name, (_, many), staff = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(7, 15)
        q = phrase(
            rng,
            (
                f"What is {p}% of {base}?",
                f"Find {p}% of {base}.",
                f"A school has {base} students and {p}% of them walk to school. How many walk?",
                f"A tank holds {base} litres. How many litres is {p}% of the tank?",
                f"What is {spell(p)} percent of {base}?",
                f"{name} has {base} {many} and gives away {p}% of them. How many {many} does {name} give away?",
                f"A library with {staff} staff owns {base} books, and {p}% of them are on loan. How many books are on loan?",
                HeldOut(f"Out of {base} people asked, {p} in every 100 said yes. How many said yes?"),
                HeldOut(f"A field of {base} square metres has {p}% of its area planted with corn. How many square metres are planted?"),
            ),
        )  # fmt: skip
        return Problem(q, say(lab("", S.percent_of(base, p))), v, F(base) * F(p, 100))
    old = rng.randrange(20, 400, 20)  # a multiple of 20 times a multiple of 5: whole change
    p = rng.choice((5, 10, 15, 20, 25, 30, 40, 50))
    up = rng.random() < 0.6
    new = old + old * p // 100 if up else old - old * p // 100
    ch = abs(new - old)
    pct = F(ch * 100, old)
    word = "increase" if up else "decrease"
    name, cur = rng.choice(NAMES), currency(rng)
    q = phrase(
        rng,
        (
            f"A price changes from {old} to {new}. What is the percent {word}?",
            f"The number of members went from {old} to {new}. By what percent did it {'go up' if up else 'go down'}?",
            f"{name}'s rent was {money(old, cur)} and is now {money(new, cur)}. What is the percent {word}?",
            HeldOut(f"A town had {old} houses; it now has {new}. As a percentage of the old number, how big is the {word}?"),
            HeldOut(f"Last year a club sold {old} tickets and this year {new}. How many percent {'more' if up else 'fewer'} tickets did it sell this year?"),
        ),
    )  # fmt: skip
    steps = [
        lab("Change", S.worked(max(new, old), "-", min(new, old))),
        f"Percent: {ch} * 100 / {old} = {fmt(pct)}",
    ]
    return Problem(q, say(*steps), pct, abs(F(new) - F(old)) / F(old) * 100)


def discount(rng: random.Random, d: int) -> Problem:
    cur, good = currency(rng), rng.choice(GOODS)
    price = rng.randrange(20, 200, 10) if d == 1 else rng.randrange(40, 2000, 20)
    p = rng.choice((10, 20, 25, 50)) if d == 1 else rng.randrange(5, 80, 5)
    off = F(price * p, 100)
    steps = [
        lab("Discount", S.percent_of(price, p)),
        lab("Price", S.worked(price, "-", off)),
    ]
    if d < 3:
        name, years = rng.choice(NAMES), rng.randint(3, 40)
        q = phrase(
            rng,
            (
                f"A {good} costs {money(price, cur)} and is {p}% off. What is the sale price?",
                f"A {good} priced at {money(price, cur)} is sold at a {p}% discount. How much does it cost now?",
                f"{rng.choice(NAMES)} buys a {good} marked {money(price, cur)} with {p}% off. How much does {rng.choice(('she', 'he'))} pay?",
                f"{name} pays for a {good} that is {money(price, cur)} before a {p}% discount. What does {name} pay?",
                f"A shop that has been open for {years} years takes {p}% off a {good} that costs {money(price, cur)}. What is the new price?",
                f"A {good} costs {money(price, cur)}. The shop lowers the price by {p}%. What does it cost after the cut?",
                f"A {good} costs {money(price, cur)} and is reduced by {spell(p)} percent. What is the sale price?",
                HeldOut(f"During a sale every item is {p}% cheaper. How much is a {good} that normally costs {money(price, cur)}?"),
                HeldOut(f"{name} has a coupon worth {p}% of the price of a {money(price, cur)} {good}. How much does {name} pay after using it?"),
            ),
        )  # fmt: skip
        return Problem(q, say(*steps), price - off, F(price) * (1 - F(p, 100)))
    t = rng.choice((5, 10, 20))
    sale = price - off
    tax = sale * t / 100
    q = phrase(
        rng,
        (
            f"A {good} costs {money(price, cur)}. It is {p}% off, then {t}% tax is added to the sale price. What is the final price?",
            f"A {good} is priced at {money(price, cur)}. After a {p}% discount, a {t}% tax is charged on the reduced price. How much is paid in total?",
            HeldOut(f"The tag on a {good} says {money(price, cur)}. The store takes {p}% off, and then {t}% sales tax is added to what is left. What does the buyer pay?"),
            HeldOut(f"First take {p}% off {money(price, cur)}, then add {t}% of the result. What is the final amount?"),
        ),
    )  # fmt: skip
    steps += [
        lab("Tax", S.percent_of(sale, t)),
        lab("Total", S.worked(sale, "+", tax)),
    ]
    return Problem(q, say(*steps), sale + tax, F(price) * (1 - F(p, 100)) * (1 + F(t, 100)))


def markup(rng: random.Random, d: int) -> Problem:
    cur, good = currency(rng), rng.choice(GOODS)
    cost = rng.randrange(20, 400, 20) if d == 1 else rng.randrange(40, 3000, 20)
    p = rng.choice((10, 20, 25, 50)) if d == 1 else rng.randrange(5, 100, 5)
    up = F(cost * p, 100)
    name, staff = rng.choice(NAMES), rng.randint(2, 30)
    q = phrase(
        rng,
        (
            f"A shop buys a {good} for {money(cost, cur)} and marks it up by {p}%. What is the selling price?",
            f"A trader adds a {p}% markup to a {good} that cost {money(cost, cur)}. What does it sell for?",
            f"The cost price of a {good} is {money(cost, cur)}. It is sold at a {p}% profit. What is the selling price?",
            f"A {good} costs a shop {money(cost, cur)}. The shop sells it for {p}% more than that. What is the selling price?",
            f"{name}, who runs a shop with {staff} staff, buys a {good} for {money(cost, cur)} and adds {p}% to the price. What does the {good} sell for?",
            f"The price of a {good} was {money(cost, cur)} and rises by {spell(p)} percent. What is the new price?",
            HeldOut(f"A {good} bought for {money(cost, cur)} is resold to earn {p}% on top of what was paid. At what price is it resold?"),
            HeldOut(f"Making a {good} costs {money(cost, cur)}, and the maker wants to earn {p}% over that cost. What price should it be sold at?"),
        ),
    )  # fmt: skip
    steps = [
        lab("Markup", S.percent_of(cost, p)),
        lab("Price", S.worked(cost, "+", up)),
    ]
    return Problem(q, say(*steps), cost + up, F(cost) * (1 + F(p, 100)))


def reverse_price(rng: random.Random, d: int) -> Problem:
    """The original price from a discounted (or marked-up) one: ₹240 after 20% off -> ₹300."""
    cur, good = currency(rng), rng.choice(GOODS)
    orig = rng.randrange(20, 500, 20) if d == 1 else rng.randrange(40, 4000, 20)
    p = rng.choice((10, 20, 25, 50)) if d < 3 else rng.randrange(5, 80, 5)
    down = d < 3 or rng.random() < 0.5
    pct = 100 - p if down else 100 + p
    now = F(orig * pct, 100)
    if down:
        name = rng.choice(NAMES)
        q = phrase(
            rng,
            (
                f"A {good} sells for {money(now, cur)} after a {p}% discount. What was the original price?",
                f"After {p}% off, a {good} costs {money(now, cur)}. What was its price before the discount?",
                f"{name} paid {money(now, cur)} for a {good} in a {p}%-off sale. What was the price before the sale?",
                f"A {good} costs {money(now, cur)} once {p}% is taken off. What did it cost at first?",
                f"A {good} now sells for {money(now, cur)}, which is {spell(p)} percent less than before. What was the old price?",
                HeldOut(f"After the price of a {good} dropped by {p}%, it is {money(now, cur)}. How much was it before the drop?"),
                HeldOut(f"{name} got {p}% knocked off a {good} and handed over {money(now, cur)}. What was the full price?"),
            ),
        )  # fmt: skip
        first = f"100 - {p} = {pct}"
    else:
        q = phrase(
            rng,
            (
                f"After a {p}% markup, a {good} sells for {money(now, cur)}. What did it cost the shop?",
                f"A shop adds {p}% to what it pays and sells a {good} for {money(now, cur)}. What did the shop pay?",
                HeldOut(f"A {good} sells for {money(now, cur)}, which includes a {p}% markup on the cost. What is the cost?"),
                HeldOut(f"The price of a {good} went up by {p}% to {money(now, cur)}. What was the price before the rise?"),
            ),
        )  # fmt: skip
        first = f"100 + {p} = {pct}"
    if S.small():  # what is left is k parts of u%: one part, then all 100 / u of them
        u = next(u for u in (50, 25, 20, 10, 5, 1) if pct % u == 0)
        part = now * u / pct
        steps = [first]
        if pct != u:
            steps.append(lab(f"{u}%", S.worked(now, "/", F(pct, u))))
        steps.append(lab("100%", S.worked(part, "*", 100 // u)))
        return Problem(q, say(*steps), part * 100 / u, now / (1 + (-1 if down else 1) * F(p, 100)))
    one = now / pct
    steps = [first, f"{fmt(now)} / {pct} = {fmt(one)}", f"{fmt(one)} * 100 = {fmt(one * 100)}"]
    sign = -1 if down else 1
    return Problem(q, say(*steps), one * 100, now / (1 + sign * F(p, 100)))
