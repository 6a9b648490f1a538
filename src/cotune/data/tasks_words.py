"""Word problems: percent, discount and markup (also in reverse), unit rates, ratios,
speed/distance/time, making change, averages and 2-4 step combinations.

Same contract as :mod:`cotune.data.tasks_arith`: short labelled claims that
:mod:`cotune.verify` can check, and an independent exact ``check`` of the answer.
"""

from __future__ import annotations

import random
from fractions import Fraction as F

from cotune.data.tasks_arith import Problem
from cotune.format import format_number as fmt

NAMES = (
    "Asha", "Ben", "Chen", "Diya", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
    "Kavya", "Leo", "Maya", "Noah", "Omar", "Priya", "Ravi", "Sara", "Tom", "Zoe",
)  # fmt: skip
ITEMS = (
    ("pen", "pens"), ("notebook", "notebooks"), ("apple", "apples"), ("ticket", "tickets"),
    ("book", "books"), ("mango", "mangoes"), ("sticker", "stickers"), ("cup", "cups"),
    ("marker", "markers"), ("orange", "oranges"),
)  # fmt: skip
GOODS = ("shirt", "bag", "lamp", "jacket", "chair", "phone case", "watch", "backpack", "kettle")


def money(x: F | int, cur: str) -> str:
    """Prices as people write them: $80, $2.50, ₹1200."""
    x = F(x)
    return f"{cur}{x.numerator}" if x.denominator == 1 else f"{cur}{float(x):.2f}"


def say(*parts: str) -> str:
    """Labelled steps: ``Discount: 80 * 25 / 100 = 20. Price: 80 - 20 = 60.``"""
    return " ".join(p.rstrip(".") + "." for p in parts)


def _cur(rng: random.Random) -> str:
    return rng.choice(("$", "₹"))


# --------------------------------------------------------------------------- percent


def percent(rng: random.Random, d: int) -> Problem:
    if d < 3:
        p = rng.choice((10, 20, 25, 50, 75)) if d == 1 else rng.randrange(5, 100, 5)
        base = rng.randrange(20, 400, 20) if d == 1 else rng.randrange(40, 2000, 20)
        v = F(base * p, 100)
        q = rng.choice(
            (
                f"What is {p}% of {base}?",
                f"Find {p}% of {base}.",
                f"A school has {base} students and {p}% of them walk to school. How many walk?",
                f"A tank holds {base} litres. How many litres is {p}% of the tank?",
            )
        )
        return Problem(q, say(f"{base} * {p} / 100 = {fmt(v)}"), v, F(base) * F(p, 100))
    old = rng.randrange(20, 400, 20)  # a multiple of 20 times a multiple of 5: whole change
    p = rng.choice((5, 10, 15, 20, 25, 30, 40, 50))
    up = rng.random() < 0.6
    new = old + old * p // 100 if up else old - old * p // 100
    ch = abs(new - old)
    pct = F(ch * 100, old)
    word = "increase" if up else "decrease"
    q = f"A price changes from {old} to {new}. What is the percent {word}?"
    steps = [
        f"Change: {max(new, old)} - {min(new, old)} = {ch}",
        f"Percent: {ch} * 100 / {old} = {fmt(pct)}",
    ]
    return Problem(q, say(*steps), pct, abs(F(new) - F(old)) / F(old) * 100)


def discount(rng: random.Random, d: int) -> Problem:
    cur, good = _cur(rng), rng.choice(GOODS)
    price = rng.randrange(20, 200, 10) if d == 1 else rng.randrange(40, 2000, 20)
    p = rng.choice((10, 20, 25, 50)) if d == 1 else rng.randrange(5, 80, 5)
    off = F(price * p, 100)
    steps = [
        f"Discount: {price} * {p} / 100 = {fmt(off)}",
        f"Price: {price} - {fmt(off)} = {fmt(price - off)}",
    ]
    if d < 3:
        q = rng.choice(
            (
                f"A {good} costs {money(price, cur)} and is {p}% off. What is the sale price?",
                f"A {good} priced at {money(price, cur)} is sold at a {p}% discount. How much does it cost now?",
                f"{rng.choice(NAMES)} buys a {good} marked {money(price, cur)} with {p}% off. How much does {rng.choice(('she', 'he'))} pay?",
            )
        )
        return Problem(q, say(*steps), price - off, F(price) * (1 - F(p, 100)))
    t = rng.choice((5, 10, 20))
    sale = price - off
    tax = sale * t / 100
    q = f"A {good} costs {money(price, cur)}. It is {p}% off, then {t}% tax is added to the sale price. What is the final price?"
    steps += [
        f"Tax: {fmt(sale)} * {t} / 100 = {fmt(tax)}",
        f"Total: {fmt(sale)} + {fmt(tax)} = {fmt(sale + tax)}",
    ]
    return Problem(q, say(*steps), sale + tax, F(price) * (1 - F(p, 100)) * (1 + F(t, 100)))


def markup(rng: random.Random, d: int) -> Problem:
    cur, good = _cur(rng), rng.choice(GOODS)
    cost = rng.randrange(20, 400, 20) if d == 1 else rng.randrange(40, 3000, 20)
    p = rng.choice((10, 20, 25, 50)) if d == 1 else rng.randrange(5, 100, 5)
    up = F(cost * p, 100)
    q = rng.choice(
        (
            f"A shop buys a {good} for {money(cost, cur)} and marks it up by {p}%. What is the selling price?",
            f"A trader adds a {p}% markup to a {good} that cost {money(cost, cur)}. What does it sell for?",
            f"The cost price of a {good} is {money(cost, cur)}. It is sold at a {p}% profit. What is the selling price?",
        )
    )
    steps = [
        f"Markup: {cost} * {p} / 100 = {fmt(up)}",
        f"Price: {cost} + {fmt(up)} = {fmt(cost + up)}",
    ]
    return Problem(q, say(*steps), cost + up, F(cost) * (1 + F(p, 100)))


def reverse_price(rng: random.Random, d: int) -> Problem:
    """The original price from a discounted (or marked-up) one: ₹240 after 20% off -> ₹300."""
    cur, good = _cur(rng), rng.choice(GOODS)
    orig = rng.randrange(20, 500, 20) if d == 1 else rng.randrange(40, 4000, 20)
    p = rng.choice((10, 20, 25, 50)) if d < 3 else rng.randrange(5, 80, 5)
    down = d < 3 or rng.random() < 0.5
    pct = 100 - p if down else 100 + p
    now = F(orig * pct, 100)
    if down:
        q = rng.choice(
            (
                f"A {good} sells for {money(now, cur)} after a {p}% discount. What was the original price?",
                f"After {p}% off, a {good} costs {money(now, cur)}. What was its price before the discount?",
            )
        )
        first = f"100 - {p} = {pct}"
    else:
        q = f"After a {p}% markup, a {good} sells for {money(now, cur)}. What did it cost the shop?"
        first = f"100 + {p} = {pct}"
    one = now / pct
    steps = [first, f"{fmt(now)} / {pct} = {fmt(one)}", f"{fmt(one)} * 100 = {fmt(one * 100)}"]
    sign = -1 if down else 1
    return Problem(q, say(*steps), one * 100, now / (1 + sign * F(p, 100)))


# --------------------------------------------------------------------------- rates


def unit_rate(rng: random.Random, d: int) -> Problem:
    cur, (one, many) = _cur(rng), rng.choice(ITEMS)
    unit = F(rng.randint(2, 12)) if d < 3 else F(rng.randrange(25, 500, 25), 100)
    k = rng.randint(2, 9) if d == 1 else rng.randint(3, 20)
    m = rng.choice([i for i in range(2, 25) if i != k])
    total = unit * k
    q = rng.choice(
        (
            f"{k} {many} cost {money(total, cur)}. How much do {m} {many} cost?",
            f"If {k} {many} cost {money(total, cur)}, what is the price of {m} {many}?",
            f"{rng.choice(NAMES)} paid {money(total, cur)} for {k} {many}. At the same price, how much would {m} {many} cost?",
        )
    )
    steps = [
        f"One {one}: {fmt(total)} / {k} = {fmt(unit)}",
        f"{m} {many}: {fmt(unit)} * {m} = {fmt(unit * m)}",
    ]
    return Problem(q, say(*steps), unit * m, F(total) * m / k)


def ratio(rng: random.Random, d: int) -> Problem:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    n1, n2 = rng.sample(NAMES, 2)
    if d < 3:
        unit = rng.randint(2, 20) if d == 1 else rng.randint(5, 60)
        total = (a + b) * unit
        who, part = (n1, a) if rng.random() < 0.5 else (n2, b)
        cur = _cur(rng)
        q = rng.choice(
            (
                f"{n1} and {n2} share {money(total, cur)} in the ratio {a}:{b}. How much does {who} get?",
                f"{money(total, cur)} is split between {n1} and {n2} in the ratio {a}:{b}. What is {who}'s share?",
            )
        )
        steps = [
            f"Parts: {a} + {b} = {a + b}",
            f"One part: {total} / {a + b} = {unit}",
            f"{who}: {unit} * {part} = {unit * part}",
        ]
        return Problem(q, say(*steps), F(unit * part), F(total) * part / (a + b))
    unit = rng.randint(2, 15)
    boys = a * unit
    q = f"The ratio of boys to girls in a club is {a}:{b}. There are {boys} boys. How many girls are there?"
    steps = [f"One part: {boys} / {a} = {unit}", f"Girls: {unit} * {b} = {unit * b}"]
    return Problem(q, say(*steps), F(unit * b), F(boys) * b / a)


def speed(rng: random.Random, d: int) -> Problem:
    v = rng.randrange(20, 120, 5)
    if d == 1:
        t = rng.randint(2, 6)
        if rng.random() < 0.5:
            q = f"A car travels at {v} km/h for {t} hours. How far does it go in km?"
            return Problem(q, say(f"Distance: {v} * {t} = {v * t}"), F(v * t), F(v) * t)
        q = f"A train covers {v * t} km in {t} hours. What is its average speed in km/h?"
        return Problem(q, say(f"Speed: {v * t} / {t} = {v}"), F(v), F(v * t, t))
    if d == 2:
        mins = rng.choice((15, 30, 45, 90, 120, 150))
        h = F(mins, 60)
        if rng.random() < 0.5:
            q = f"A cyclist rides at {v} km/h for {mins} minutes. How many km does she ride?"
            steps = [f"Hours: {mins} / 60 = {fmt(h)}", f"Distance: {v} * {fmt(h)} = {fmt(v * h)}"]
            return Problem(q, say(*steps), v * h, F(v * mins, 60))
        t = rng.randint(2, 8)
        q = f"How many hours does it take to drive {v * t} km at {v} km/h?"
        return Problem(q, say(f"Time: {v * t} / {v} = {t}"), F(t), F(v * t, v))
    v2 = rng.randrange(20, 120, 5)
    t1, t2 = rng.randint(1, 5), rng.randint(1, 5)
    d1, d2 = v * t1, v2 * t2
    q = f"A bus goes {d1} km at {v} km/h, then {d2} km at {v2} km/h. How many hours does the trip take?"
    steps = [f"{d1} / {v} = {t1}", f"{d2} / {v2} = {t2}", f"Total: {t1} + {t2} = {t1 + t2}"]
    return Problem(q, say(*steps), F(t1 + t2), F(d1, v) + F(d2, v2))


def change(rng: random.Random, d: int) -> Problem:
    cur, name, (one, many) = _cur(rng), rng.choice(NAMES), rng.choice(ITEMS)
    if d == 1:
        p = rng.randint(1, 18)
        paid = rng.choice([x for x in (5, 10, 20, 50) if x > p])
        q = f"{name} buys a {one} for {money(p, cur)} and pays with {money(paid, cur)}. How much change does {name} get?"
        return Problem(q, say(f"Change: {paid} - {p} = {paid - p}"), F(paid - p), F(paid) - p)
    if d == 2:
        k, p = rng.randint(2, 9), rng.randint(2, 15)
        paid = rng.choice([x for x in (20, 50, 100, 200) if x > k * p])
        q = f"{name} buys {k} {many} at {money(p, cur)} each and pays with {money(paid, cur)}. How much change is there?"
        steps = [f"Cost: {k} * {p} = {k * p}", f"Change: {paid} - {k * p} = {paid - k * p}"]
        return Problem(q, say(*steps), F(paid - k * p), F(paid) - F(k) * p)
    k = rng.randint(2, 5)
    p1, p2 = F(rng.randrange(50, 1000, 25), 100), F(rng.randrange(50, 1000, 25), 100)
    cost = k * p1 + p2
    paid = next(x for x in (10, 20, 50, 100) if x > cost)
    q = (
        f"{name} buys {k} {many} at {money(p1, cur)} each and a snack for {money(p2, cur)}, "
        f"paying with {money(paid, cur)}. How much change does {name} get?"
    )
    steps = [
        f"{k} * {fmt(p1)} = {fmt(k * p1)}",
        f"{fmt(k * p1)} + {fmt(p2)} = {fmt(cost)}",
        f"Change: {paid} - {fmt(cost)} = {fmt(paid - cost)}",
    ]
    return Problem(q, say(*steps), paid - cost, F(paid) - k * p1 - p2)


def average(rng: random.Random, d: int) -> Problem:
    name = rng.choice(NAMES)
    if d < 3:
        n = rng.choice((2, 3)) if d == 1 else rng.choice((4, 5))
        hi = 20 if d == 1 else 100
        xs = [rng.randint(1, hi) for _ in range(n)]
        if d == 1:
            xs[-1] += (-sum(xs)) % n  # a whole-number mean at level 1
        s = sum(xs)
        listed = ", ".join(map(str, xs[:-1])) + f" and {xs[-1]}"
        q = rng.choice(
            (
                f"What is the average of {listed}?",
                f"{name} scored {listed} in {n} games. What is the mean score?",
                f"Find the mean of {listed}.",
            )
        )
        steps = [f"Sum: {' + '.join(map(str, xs))} = {s}", f"Mean: {s} / {n} = {fmt(F(s, n))}"]
        return Problem(q, say(*steps), F(s, n), sum(map(F, xs)) / len(xs))
    n = rng.choice((3, 4, 5))
    mean = rng.randint(10, 90)
    known = [rng.randint(max(1, mean - 20), mean + 20) for _ in range(n - 1)]
    last = mean * n - sum(known)
    while last <= 0:
        last, mean = last + n * 10, mean + 10
    listed = ", ".join(map(str, known))
    q = f"The average of {n} numbers is {mean}. {n - 1} of them are {listed}. What is the last number?"
    steps = [
        f"Total: {mean} * {n} = {mean * n}",
        f"Known: {' + '.join(map(str, known))} = {sum(known)}",
        f"Last: {mean * n} - {sum(known)} = {last}",
    ]
    return Problem(q, say(*steps), F(last), F(mean) * n - sum(known))


# --------------------------------------------------------------------------- combinations


def multi_step(rng: random.Random, d: int) -> Problem:
    name, (_, many) = rng.choice(NAMES), rng.choice(ITEMS)
    cur = _cur(rng)
    kind = rng.choice({1: ("packs", "wage"), 2: ("share", "days"), 3: ("trip", "boxes")}[d])
    if kind == "packs":
        a, b, c = rng.randint(2, 30), rng.randint(2, 6), rng.randint(2, 12)
        q = f"{name} has {a} {many} and buys {b} packs of {c}. How many {many} does {name} have now?"
        steps = [f"Bought: {b} * {c} = {b * c}", f"Total: {a} + {b * c} = {a + b * c}"]
        return Problem(q, say(*steps), F(a + b * c), F(a) + F(b) * c)
    if kind == "wage":
        h, t = rng.randint(5, 25), rng.randint(2, 8)
        s = rng.randint(1, h * t - 1)
        q = f"{name} earns {money(h, cur)} an hour, works {t} hours and spends {money(s, cur)}. How much is left?"
        steps = [f"Earned: {h} * {t} = {h * t}", f"Left: {h * t} - {s} = {h * t - s}"]
        return Problem(q, say(*steps), F(h * t - s), F(h) * t - s)
    if kind == "share":
        k, each = rng.randint(2, 6), rng.randint(2, 12)
        c = rng.randint(6, 24)
        b = rng.randint(2, 6)
        g = b * c - k * each
        if g <= 0:
            b = -(-k * each // c) + 1
            g = b * c - k * each
        q = (
            f"{name} buys {b} packs of {c} {many}, keeps {g} and shares the rest equally among "
            f"{k} friends. How many does each friend get?"
        )
        steps = [
            f"{b} * {c} = {b * c}",
            f"{b * c} - {g} = {k * each}",
            f"Each: {k * each} / {k} = {each}",
        ]
        return Problem(q, say(*steps), F(each), (F(b) * c - g) / k)
    if kind == "days":
        a, less = rng.randint(10, 40), rng.randint(1, 9)
        q = (
            f"{name} reads {a} pages on Monday, twice as many on Tuesday, and {less} fewer on "
            f"Wednesday than on Tuesday. How many pages is that in total?"
        )
        tu, we = 2 * a, 2 * a - less
        steps = [
            f"Tuesday: {a} * 2 = {tu}",
            f"Wednesday: {tu} - {less} = {we}",
            f"Total: {a} + {tu} + {we} = {a + tu + we}",
        ]
        return Problem(q, say(*steps), F(a + tu + we), F(a) * 5 - less)
    if kind == "trip":
        n, c, k = rng.randint(10, 40), rng.randint(5, 20), rng.randint(2, 5)
        extra = rng.randint(10, 100)
        left = k * rng.randint(1, (n * c + extra - 40) // k)  # whole prizes; bus >= 40
        bus = n * c + extra - left
        q = (
            f"{n} students each pay {money(c, cur)} for a trip and the teacher adds {money(extra, cur)}. "
            f"The bus costs {money(bus, cur)} and the rest buys {k} equal prizes. What does each prize cost?"
        )
        steps = [
            f"{n} * {c} = {n * c}",
            f"{n * c} + {extra} = {n * c + extra}",
            f"{n * c + extra} - {bus} = {left}",
            f"Prize: {left} / {k} = {fmt(F(left, k))}",
        ]
        return Problem(q, say(*steps), F(left, k), (F(n) * c + extra - bus) / k)
    a, b, bad = rng.randint(3, 12), rng.randint(10, 30), rng.randint(1, 5)
    p = rng.randint(2, 9)
    q = (
        f"A grocer has {a} boxes of {b} {many}. In each box {bad} are spoiled. The rest sell for "
        f"{money(p, cur)} each. How much money does the grocer make?"
    )
    good = b - bad
    steps = [
        f"Good per box: {b} - {bad} = {good}",
        f"Good: {a} * {good} = {a * good}",
        f"Money: {a * good} * {p} = {a * good * p}",
    ]
    return Problem(q, say(*steps), F(a * good * p), (F(a) * b - F(a) * bad) * p)
