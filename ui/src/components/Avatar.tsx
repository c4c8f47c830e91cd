import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { consistentColor, initials } from "../chat";

// Avatars by SHA-1: the bytes under a hash never change, so each picture is asked of the core
// once per window. `shown` holds the data: URLs that came; `asked` the requests under way (a
// picture the store does not have yet is asked again on the next render that names it).
const shown = new Map<string, string>();
const asked = new Map<string, Promise<string | null>>();

function picture(account: string, sha1: string): Promise<string | null> {
  let p = asked.get(sha1);
  if (!p) {
    p = api.avatar(account, sha1).then((url) => {
      if (url) shown.set(sha1, url);
      return url;
    });
    p.finally(() => asked.delete(sha1)).catch(() => {});
    asked.set(sha1, p);
  }
  return p;
}

interface AvatarProps {
  /** The account that knows the avatar. */
  account: string;
  /** Whose it is (its colour when there is no picture). */
  jid: string;
  /** The name shown for them (its first letter when there is no picture). */
  name: string;
  /** The avatar's SHA-1, or null for none. */
  sha1: string | null;
  size?: number;
  testid?: string;
}

/** A contact's (or our own) avatar: the picture when the store has it, else the first letter of
 * their name on their XEP-0392 colour. */
export function Avatar({ account, jid, name, sha1, size = 28, testid = "avatar" }: AvatarProps) {
  const [url, setUrl] = useState<string | null>(sha1 ? (shown.get(sha1) ?? null) : null);
  useEffect(() => {
    if (!sha1) {
      setUrl(null);
      return;
    }
    const known = shown.get(sha1);
    setUrl(known ?? null);
    if (known) return;
    let live = true;
    picture(account, sha1).then(
      (u) => live && setUrl(u),
      (e) => console.error(`the avatar of ${jid}`, e),
    );
    return () => {
      live = false;
    };
  }, [account, jid, sha1]);
  const box = { width: `${size}px`, height: `${size}px`, fontSize: `${Math.round(size * 0.45)}px` };
  return url ? (
    <img class="avatar" src={url} alt="" style={box} data-testid={testid} data-jid={jid} data-avatar={sha1 ?? undefined} />
  ) : (
    <span
      class="avatar initial"
      style={{ ...box, background: consistentColor(jid) }}
      data-testid={testid}
      data-jid={jid}
      aria-hidden="true"
    >
      {initials(name)}
    </span>
  );
}
