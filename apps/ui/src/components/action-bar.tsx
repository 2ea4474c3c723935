import { useState } from 'preact/hooks';
import type { Action, FieldValues } from '../actions';
import type { CryoApi } from '../api';

export interface Notice {
  kind: 'info' | 'error';
  text: string;
}

interface ActionBarProps<T> {
  item: T;
  actions: ReadonlyArray<Action<T>>;
  api: CryoApi;
  /** Called after an action ran (or failed), to show the result and refresh the lists. */
  onDone: (notice: Notice) => void;
}

/**
 * Buttons for a row's actions. An action with fields opens a small inline form; a destructive
 * one asks for a second click. Any `Action` list works, so new actions need no change here.
 */
export function ActionBar<T>({ item, actions, api, onDone }: ActionBarProps<T>) {
  const [open, setOpen] = useState<string | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [values, setValues] = useState<FieldValues>({});
  const openAction = actions.find((a) => a.id === open);

  const run = async (action: Action<T>, fieldValues: FieldValues): Promise<void> => {
    setBusy(true);
    try {
      onDone({ kind: 'info', text: await action.run(api, item, fieldValues) });
      setOpen(null);
    } catch (err) {
      onDone({ kind: 'error', text: `${action.label} failed: ${err instanceof Error ? err.message : String(err)}` });
    } finally {
      setBusy(false);
      setConfirming(null);
    }
  };

  const click = (action: Action<T>): void => {
    if (action.fields !== undefined && action.fields.length > 0) {
      if (open === action.id) {
        setOpen(null);
        return;
      }
      setValues(Object.fromEntries(action.fields.map((f) => [f.name, f.initial(item)])));
      setOpen(action.id);
      return;
    }
    if (action.danger === true && confirming !== action.id) {
      setConfirming(action.id);
      return;
    }
    void run(action, {});
  };

  return (
    <div class="actions">
      <div class="action-buttons">
        {actions.map((action) => {
          const why = action.unavailable(item);
          const confirm = confirming === action.id;
          return (
            <button
              type="button"
              key={action.id}
              data-action={action.id}
              class={action.danger === true ? 'danger' : open === action.id ? 'active' : ''}
              disabled={busy || why !== null}
              title={why ?? undefined}
              onClick={() => click(action)}
            >
              {confirm ? `Confirm ${action.label.toLowerCase()}` : action.label}
            </button>
          );
        })}
      </div>
      {openAction?.fields !== undefined && (
        <form
          class="action-form"
          data-form={openAction.id}
          onSubmit={(e) => {
            e.preventDefault();
            void run(openAction, values);
          }}
        >
          {openAction.fields.map((field) => (
            <label key={field.name}>
              <span>{field.label}</span>
              {field.kind === 'select'
                ? (
                  <select
                    name={field.name}
                    value={values[field.name] ?? ''}
                    onChange={(e) => setValues({ ...values, [field.name]: e.currentTarget.value })}
                  >
                    {field.options.map((o) => <option key={o} value={o}>{o}</option>)}
                  </select>
                )
                : (
                  <input
                    name={field.name}
                    value={values[field.name] ?? ''}
                    placeholder={field.placeholder}
                    title={field.hint}
                    onInput={(e) => setValues({ ...values, [field.name]: e.currentTarget.value })}
                  />
                )}
            </label>
          ))}
          <button type="submit" disabled={busy}>{openAction.label}</button>
          <button type="button" class="link" onClick={() => setOpen(null)}>Cancel</button>
        </form>
      )}
    </div>
  );
}
