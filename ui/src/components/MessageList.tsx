// The conversation's history: a virtualised list (only the rows on screen are in the DOM), so a
// conversation of 100,000 messages opens and scrolls like one of ten. Older pages load from the
// store as the user nears the top; the view sticks to the bottom while new messages arrive.

import { useEffect, useLayoutEffect, useReducer, useRef, useState } from "preact/hooks";
import type { ComponentChildren } from "preact";
import {
  Virtualizer,
  elementScroll,
  observeElementOffset,
  observeElementRect,
} from "@tanstack/virtual-core";
import type { Message } from "../api";

interface Props {
  messages: Message[];
  hasOlder: boolean;
  loadOlder: () => Promise<number>;
  /** One row; `prev` is the row above it (for day separators). */
  row: (m: Message, prev: Message | undefined) => ComponentChildren;
}

export function MessageList({ messages, hasOlder, loadOlder, row }: Props) {
  const scroller = useRef<HTMLDivElement>(null);
  const [, rerender] = useReducer((n: number) => n + 1, 0);
  const [virtualizer] = useState(
    () =>
      new Virtualizer<HTMLDivElement, Element>({
        count: 0,
        getScrollElement: () => scroller.current,
        estimateSize: () => 64,
        overscan: 12,
        observeElementRect,
        observeElementOffset,
        scrollToFn: elementScroll,
        measureElement: (el) => el.getBoundingClientRect().height,
        onChange: () => rerender(0),
      }),
  );
  const loading = useRef(false);
  const atBottom = useRef(true);
  const firstId = useRef<string | null>(null);

  virtualizer.setOptions({ ...virtualizer.options, count: messages.length });
  useLayoutEffect(() => virtualizer._didMount(), [virtualizer]);
  useLayoutEffect(() => {
    virtualizer._willUpdate();
  });

  // New messages at the bottom: follow them if the user was at the bottom.
  useEffect(() => {
    const prepended = firstId.current !== null && messages[0]?.id !== firstId.current;
    firstId.current = messages[0]?.id ?? null;
    if (!prepended && atBottom.current && messages.length > 0) {
      virtualizer.scrollToIndex(messages.length - 1, { align: "end" });
    }
  }, [messages, virtualizer]);

  const onScroll = async () => {
    const el = scroller.current;
    if (!el) return;
    atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (el.scrollTop < 200 && hasOlder && !loading.current) {
      loading.current = true;
      const anchor = virtualizer.getVirtualItems()[0]?.index ?? 0;
      const added = await loadOlder();
      // Keep the row the user was looking at in place.
      virtualizer.scrollToIndex(anchor + added, { align: "start" });
      loading.current = false;
    }
  };

  const items = virtualizer.getVirtualItems();
  return (
    <div class="messages" ref={scroller} onScroll={onScroll} data-testid="messages">
      <div style={{ height: `${virtualizer.getTotalSize()}px`, position: "relative", width: "100%" }}>
        {items.map((item) => {
          const m = messages[item.index];
          return (
            <div
              key={m.id}
              data-index={item.index}
              ref={(el) => {
                if (el) virtualizer.measureElement(el);
              }}
              class={`row ${m.direction === "out" ? "mine" : "theirs"}`}
              style={{ position: "absolute", top: 0, left: 0, width: "100%", transform: `translateY(${item.start}px)` }}
            >
              {row(m, messages[item.index - 1])}
            </div>
          );
        })}
      </div>
    </div>
  );
}
