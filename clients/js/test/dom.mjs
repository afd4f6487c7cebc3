// A DOM for the React tests (happy-dom). Imported after helpers.mjs, which keeps
// Node's own fetch for the server API. The DOM is taken down after the file's
// tests, so that its timers do not keep the process alive.
import { GlobalRegistrator } from '@happy-dom/global-registrator';
import { after } from 'node:test';

GlobalRegistrator.register({ url: 'http://localhost/' });
after(() => GlobalRegistrator.unregister());
