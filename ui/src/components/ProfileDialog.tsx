import { useCallback, useEffect, useState } from "preact/hooks";
import { api, errorText, type Profile } from "../api";
import type { SocialEvent } from "../generated/contract";
import { Avatar } from "./Avatar";

/** The account's own profile: its avatar and nickname, changed here. The core checks every change
 * (an image it can show, a nickname it accepts) and tells the server; a refusal is shown as the
 * core words it. */
export function ProfileDialog({ account, onClose }: { account: string; onClose: () => void }) {
  const [profile, setProfile] = useState<Profile | null>(null);
  const [nick, setNick] = useState("");
  const [path, setPath] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  // Whether the server has every change (the core keeps each until it confirms).
  const [told, setTold] = useState<boolean | null>(null);
  const reload = useCallback(
    () =>
      Promise.all([api.profile(account), api.profileTold()]).then(([p, t]) => {
        setProfile(p);
        setTold(t);
      }, (e) => setError(errorText(e))),
    [account],
  );
  // A confirmation raises no event of its own: asked again each second until it comes.
  useEffect(() => {
    if (told !== false) return;
    const t = setInterval(() => api.profileTold().then(setTold, (e) => setError(errorText(e))), 1000);
    return () => clearInterval(t);
  }, [told]);
  useEffect(() => {
    api.profile(account).then((p) => {
      setProfile(p);
      setNick(p?.nick ?? "");
    }, (e) => setError(errorText(e)));
    api.profileTold().then(setTold, (e) => setError(errorText(e)));
    // Another device of ours (or the server) may change it while the dialog is open.
    const un = api.onEvent((e) => {
      if (e.account === account && e.event === "profile" && (e as Extract<SocialEvent, { event: "profile" }>).jid === account)
        void reload();
    });
    return () => void un.then((f) => f());
  }, [account, reload]);
  const run = async (change: Promise<unknown>, said: string) => {
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      await change;
      setDone(said);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
      await reload();
    }
  };
  const shownName = profile?.nick || account;
  return (
    <div class="modal" role="dialog" aria-modal="true">
      <div class="card profile-card" data-testid="profile-dialog">
        <h3>Your profile</h3>
        <div class="profile-head">
          <Avatar account={account} jid={account} name={shownName} sha1={profile?.avatar ?? null} size={64} testid="own-avatar" />
          <div>
            <div class="profile-name" data-testid="own-name">{shownName}</div>
            <div class="hint">{account}</div>
          </div>
        </div>
        <form
          class="profile-row"
          onSubmit={(e) => {
            e.preventDefault();
            void run(api.setNick(nick), nick ? "Nickname saved." : "Nickname removed.");
          }}
        >
          <label>
            Nickname
            <input data-testid="nick" placeholder="what your contacts see" value={nick} onInput={(e) => setNick((e.target as HTMLInputElement).value)} />
          </label>
          <button type="submit" data-testid="save-nick" disabled={busy}>
            Save
          </button>
        </form>
        <form
          class="profile-row"
          onSubmit={(e) => {
            e.preventDefault();
            void run(api.setAvatar(path), "Avatar set.");
          }}
        >
          <label>
            Avatar: an image file
            <input data-testid="avatar-path" placeholder="/home/you/picture.png" value={path} onInput={(e) => setPath((e.target as HTMLInputElement).value)} />
          </label>
          <button type="submit" data-testid="set-avatar" disabled={busy}>
            Set avatar
          </button>
        </form>
        <div class="profile-buttons">
          <label class="link pick" title="Choose an image (PNG, JPEG, GIF or WebP)">
            Choose a picture…
            <input
              type="file"
              data-testid="avatar-file"
              style={{ position: "absolute", width: "1px", height: "1px", opacity: 0 }}
              onChange={(e) => {
                const input = e.target as HTMLInputElement;
                const file = input.files?.[0];
                input.value = "";
                if (file) void run(api.setAvatarData(file), "Avatar set.");
              }}
            />
          </label>
          <button class="secondary" data-testid="remove-avatar" disabled={busy || !profile?.avatar} onClick={() => void run(api.clearAvatar(), "Avatar removed.")}>
            Remove avatar
          </button>
        </div>
        {error && (
          <p class="error" data-testid="profile-error">
            {error}
          </p>
        )}
        {done && !error && (
          <p class="hint" data-testid="profile-done">
            {done}
          </p>
        )}
        {told !== null && (
          <p class="hint" data-testid="profile-state" data-told={String(told)}>
            {told
              ? "Your server has it: your contacts see it."
              : "Saved on this device; your contacts see it once your server confirms it (when you are online)."}
          </p>
        )}
        <div class="actions">
          <button onClick={onClose} data-testid="close-profile">
            Close
          </button>
        </div>
      </div>
    </div>
  );
}
